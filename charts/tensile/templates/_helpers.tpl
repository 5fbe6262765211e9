{{- define "tensile.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "tensile.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "tensile.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- define "tensile.labels" -}}
app.kubernetes.io/name: tensile-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "tensile.selectorLabels" -}}
app.kubernetes.io/name: tensile-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
