// Saved figure lines (bench/results/<machine>.txt) and the Markdown table rendered from them. Pure functions, shared
// by scripts/run-bench.mjs (--save), scripts/figures-table.mjs (README) and the tests. Plain JavaScript so that the
// scripts run with node alone; the types are in results.d.mts.
//
// A results file: `#` comment lines first (the machine), then one section per benchmark:
//   ## <bench> <ISO time> load=<1-min load average>[ args=<args>]
//   figure=<name> tensile=<v> peer=<v> unit=<u> ratio=<r> target=<op><v> met=<yes|no|->
// ("-" marks a field that does not apply, "failed" a value that could not be measured: see bench/lib/figures.ts).

const FIELDS = ['figure', 'tensile', 'peer', 'unit', 'ratio', 'target', 'met'];

/** The fields of one figure line; throws naming the line when it is not one. */
export function parseFigureLine(line) {
  const parts = line.trim().split(/\s+/);
  const f = {};
  for (const [i, key] of FIELDS.entries()) {
    const p = parts[i];
    if (p === undefined || !p.startsWith(`${key}=`) || p.length === key.length + 1) {
      throw new Error(`not a figure line (field ${i + 1} should be ${key}=<value>): ${JSON.stringify(line)}`);
    }
    f[key === 'figure' ? 'name' : key] = p.slice(key.length + 1);
  }
  if (parts.length > FIELDS.length) throw new Error(`figure line has extra fields: ${JSON.stringify(line)}`);
  if (!/^(<=|>=)[-+0-9.e]+$|^-$/.test(f.target)) {
    throw new Error(`figure ${f.name}: target ${JSON.stringify(f.target)} must be <op><number> or -`);
  }
  if (!['yes', 'no', '-'].includes(f.met)) throw new Error(`figure ${f.name}: met=${f.met} must be yes, no or -`);
  return f;
}

/** Splits a results file into its comment header and its sections by benchmark (in file order). */
export function parseResults(text) {
  const header = [];
  const sections = new Map();
  let current = null;
  for (const [n, raw] of text.split('\n').entries()) {
    const line = raw.trimEnd();
    if (line === '') continue;
    const m = /^## (\S+) (\S+)(.*)$/.exec(line);
    if (m) {
      if (sections.has(m[1])) throw new Error(`line ${n + 1}: a second section for ${m[1]}`);
      current = { bench: m[1], time: m[2], info: m[3].trim(), figures: [] };
      sections.set(m[1], current);
    } else if (line.startsWith('#')) {
      if (current) throw new Error(`line ${n + 1}: comment inside section ${current.bench}: ${JSON.stringify(line)}`);
      header.push(line);
    } else {
      if (!current) throw new Error(`line ${n + 1}: figure line before any section: ${JSON.stringify(line)}`);
      try {
        current.figures.push(parseFigureLine(line));
      } catch (err) {
        throw new Error(`line ${n + 1}: ${err.message}`, { cause: err });
      }
    }
  }
  return { header, sections };
}

/**
 * The results file with benchmark `bench`'s section replaced by `figureLines` (kept in their order); other
 * sections stay, sorted by benchmark. `text` undefined: a new file whose header is `newHeader`.
 */
export function mergeSection(text, bench, sectionLine, figureLines, newHeader = []) {
  if (!sectionLine.startsWith(`## ${bench} `)) {
    throw new Error(`section line ${JSON.stringify(sectionLine)} must start with "## ${bench} "`);
  }
  for (const l of figureLines) parseFigureLine(l);
  const { header, sections } = text === undefined ? { header: newHeader, sections: new Map() } : parseResults(text);
  const blocks = new Map();
  for (const [b, s] of sections) blocks.set(b, [sectionHeaderLine(s), ...s.figures.map(formatParsed)]);
  blocks.set(bench, [sectionLine, ...figureLines]);
  const ordered = [...blocks.keys()].sort().map((b) => blocks.get(b).join('\n'));
  return [header.join('\n'), ...ordered].filter((x) => x !== '').join('\n\n') + '\n';
}

function sectionHeaderLine(s) {
  return `## ${s.bench} ${s.time}${s.info ? ` ${s.info}` : ''}`;
}

function formatParsed(f) {
  return `figure=${f.name} tensile=${f.tensile} peer=${f.peer} unit=${f.unit} ratio=${f.ratio} target=${f.target} met=${f.met}`;
}

const UNIT_TEXT = { us: 'µs' };

function withUnit(v, unit) {
  if (v === '-') return '—';
  if (v === 'failed') return '**failed**';
  const u = UNIT_TEXT[unit] ?? unit;
  return u === 'x' ? `${v}×` : `${v} ${u}`;
}

/** "≤ 0.5× peer" for a side-by-side figure, "≤ 200 MB" for a figure without a peer (peer=-), "—" for none. */
function targetText(f) {
  if (f.target === '-') return '—';
  const op = f.target.startsWith('<=') ? '≤' : '≥';
  const v = f.target.slice(2);
  return f.peer === '-' ? `${op} ${withUnit(v, f.unit)}` : `${op} ${v}× peer`;
}

/**
 * A Markdown table of the sections of one results file: one row per figure; each section's first row names the run
 * (benchmark, time, and the rest of its section line: load average, arguments, notes).
 */
export function renderTable(results) {
  const rows = ['| run | figure | tensile | peer | ratio | target | met |', '|---|---|---|---|---|---|---|'];
  for (const s of results.sections.values()) {
    s.figures.forEach((f, i) => {
      const when = s.time.replace(/^(\d{4}-\d\d-\d\d)T(\d\d:\d\d).*$/, '$1 $2 UTC');
      const run = i === 0 ? `\`${s.bench}\`, ${when}${s.info ? `, ${s.info.replaceAll('|', '\\|')}` : ''}` : '';
      const met = f.met === 'no' ? '**no**' : f.met === '-' ? '—' : 'yes';
      const ratio = f.ratio === '-' ? '—' : f.ratio;
      rows.push(
        `| ${run} | ${f.name} | ${withUnit(f.tensile, f.unit)} | ${withUnit(f.peer, f.unit)} | ${ratio} | ${targetText(f)} | ${met} |`,
      );
    });
  }
  return rows.join('\n');
}

/** The region markers of machine `m`'s table in a Markdown file. */
export function markers(m) {
  return [
    `<!-- figures:${m} (generated by scripts/figures-table.mjs from bench/results/${m}.txt) -->`,
    `<!-- /figures:${m} -->`,
  ];
}

/** The machines whose tables `doc` has regions for. */
export function regionsIn(doc) {
  return [...doc.matchAll(/<!-- figures:([A-Za-z0-9._-]+) /g)].map((m) => m[1]);
}

/** `doc` with machine `m`'s region holding `table`; throws when the markers are missing or out of order. */
export function replaceRegion(doc, m, table) {
  const [open, close] = markers(m);
  const a = doc.indexOf(open);
  const b = doc.indexOf(close);
  if (a < 0 || b < a) throw new Error(`no region for ${m}: expected the lines\n${open}\n${close}`);
  return `${doc.slice(0, a + open.length)}\n${table}\n${doc.slice(b)}`;
}
