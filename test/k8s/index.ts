// In-repo Kubernetes test API server and simulated kubelet (test support, not shipped).
// User documentation: docs/k8s-test-apiserver.md.
//
//   import { startTestApiServer, startKubelet, kubectl, waitFor } from '../../k8s/index.js';
//   const server = await startTestApiServer();            // 127.0.0.1, free port, plain HTTP
//   const kubelet = await startKubelet({ server, nodeName: 'node-a', pathPrepend: shimDir });
//   const kc = new KubeConfig(); kc.loadFromFile(server.kubeconfigPath);   // or loadFromString(server.kubeconfig)
//   const r = await kubectl(server, ['apply', '-f', 'x.yaml']);   // async; private discovery cache; {code,stdout,stderr}
//   ...
//   await kubelet.stop(); await server.stop();             // in t.after / after hooks
//
// startTestApiServer(options) -> { url, port, kubeconfigPath, kubeconfig, dir, state, logSources, stop() }
//   options: port (0), gcIntervalMs (100), watchWindowEvents (10000; older resourceVersions get 410),
//            bookmarkIntervalMs (1000), scheduler (true), strictNamespaces (true), dir, logger.
//   Answers JSON at /api, /apis (legacy discovery), /version, /healthz, /openapi/v3 and /openapi/v2 (stubs so
//   that kubectl's default --validate=strict defers to server-side validation). Request bodies: JSON, YAML
//   (apply patches), or protobuf for Namespace/ConfigMap/Secret/DeleteOptions/Eviction (kubectl typed clients).
//   Built-ins: v1 pods, services, endpoints, events, configmaps, secrets, serviceaccounts, namespaces, nodes;
//   apps/v1 statefulsets, deployments (stored only, with /scale); coordination.k8s.io/v1 leases;
//   events.k8s.io/v1 events; policy/v1 poddisruptionbudgets; autoscaling/v2 horizontalpodautoscalers;
//   rbac.authorization.k8s.io/v1 roles, rolebindings, clusterroles, clusterrolebindings;
//   apiextensions.k8s.io/v1 customresourcedefinitions (registering one serves its resource at once).
//   Semantics: global resourceVersion, 409 on stale update/patch precondition, uid, creationTimestamp,
//   generation bumped on any non-metadata/status change; custom resources are defaulted, pruned
//   (fieldValidation=Strict -> 400 naming unknown fields) and validated against the CRD's structural schema
//   (type, required, enum, min/max, lengths, pattern, items) and x-kubernetes-validations in a CEL subset
//   (cel.ts; oldSelf rules skipped) -> 422 with field paths like the real server. Patches: merge, JSON,
//   strategic (built-ins only; 415 for custom resources like the real server), apply-patch+yaml treated as a
//   merge patch that may create; dryRun=All.
//   list/watch: labelSelector (equality and set-based), fieldSelector (any dotted path), limit/continue,
//   watch resume from resourceVersion, allowWatchBookmarks -> BOOKMARK, expired version -> ERROR event
//   with Status 410 reason Expired, timeoutSeconds. Table output (as=Table) with CRD additionalPrinterColumns.
//   Subresources: status (main updates keep status, /status updates only status), scale (CRD paths),
//   pods/eviction (adds DisruptionTarget then deletes), pods/binding, pods/log (from the kubelet).
//   Deletion: finalizers, deletionTimestamp, pod grace periods (pods bound to a node wait for the kubelet),
//   propagationPolicy Background (default), Foreground, Orphan; owner-reference GC (dependents whose owners
//   are all gone are deleted); namespace deletion empties the namespace first; CRD deletion drops its objects.
//   Scheduler: binds unscheduled pods to Ready, schedulable nodes with room (allocatable.pods), honouring
//   nodeSelector and NoSchedule/NoExecute taints; otherwise PodScheduled=False/Unschedulable (stays Pending).
//   Node deleted -> its pods get DisruptionTarget (reason DeletionByPodGC) and are removed; a terminating pod
//   on a node that does not exist is removed.
//   server.state (ApiState) gives in-process access: get/list/create/update/delete/watch, bindPod,
//   setPodCondition, forceDeletePod, runControllers.
//
// startKubelet({ server, nodeName, env?, pathPrepend?, maxPods?, labels?, podIP?, workDir?,
//               restartBackoffMs?, entrypoint?, logger? })
//   -> { nodeName, setReady(bool), processes(), stop({ deleteNode? }) }
//   Registers Node <nodeName> (Ready). For each pod bound to it, runs containers[0].command + args as a local
//   process group (args only: entrypoint(image) + args, or args alone). Env: this process's env + options.env
//   + the container env incl. valueFrom.fieldRef metadata.name/namespace/uid/labels['k'], spec.nodeName,
//   status.podIP, configMapKeyRef, secretKeyRef; PATH prepended with pathPrepend. A container without command
//   "runs" with no process until deleted. Reports Pending -> Running -> Succeeded/Failed with
//   containerStatuses[0].state.terminated.exitCode (128+signal when killed), podIP, restarts per restartPolicy
//   with back-off, activeDeadlineSeconds -> Failed/DeadlineExceeded. Pod deleted with a grace period ->
//   SIGTERM, SIGKILL when it expires (a shorter grace on a second delete shortens it), final status, then the
//   pod is removed. stop() SIGKILLs everything it started. Deleting its Node kills its processes (like losing
//   the machine).
export * from './api.js';
export { startTestApiServer, type TestApiServer, type PodLogSource } from './server.js';
export { startKubelet, type Kubelet, type KubeletOptions } from './kubelet.js';
export type { ApiState, WatchEvent, DeleteOptions, WriteOptions } from './state.js';
export type { ResourceDef } from './resources.js';
export { kubectl, waitFor, type KubectlResult } from './kubectl.js';
