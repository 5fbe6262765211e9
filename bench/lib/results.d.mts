// Types of bench/lib/results.mjs (plain JavaScript so that the scripts run with node alone).

export interface ParsedFigure {
  readonly name: string;
  /** The fields as printed: a number, "-" (does not apply) or "failed" (could not be measured). */
  readonly tensile: string;
  readonly peer: string;
  readonly unit: string;
  readonly ratio: string;
  /** "<op><number>" or "-". */
  readonly target: string;
  readonly met: 'yes' | 'no' | '-';
}

export interface ResultsSection {
  readonly bench: string;
  /** ISO time the run started. */
  readonly time: string;
  /** The rest of the section line (load=..., args=...). */
  readonly info: string;
  readonly figures: ParsedFigure[];
}

export interface Results {
  readonly header: string[];
  readonly sections: Map<string, ResultsSection>;
}

export function parseFigureLine(line: string): ParsedFigure;
export function parseResults(text: string): Results;
export function mergeSection(
  text: string | undefined,
  bench: string,
  sectionLine: string,
  figureLines: readonly string[],
  newHeader?: readonly string[],
): string;
export function renderTable(results: Results): string;
export function markers(machine: string): [open: string, close: string];
export function regionsIn(doc: string): string[];
export function replaceRegion(doc: string, machine: string, table: string): string;
