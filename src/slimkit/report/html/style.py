"""The report's stylesheet, inlined into every page (kept as a Python string so it ships with
the package without package-data configuration)."""

CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; --bg: #fff;
  --warn-bg: #fef3c7; --miss-bg: #f3f4f6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 16px; }
h1 { font-size: 1.6rem; margin: 1rem 0 .2rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid var(--line); padding-bottom: .2rem;
  margin-top: 2rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
h4 { font-size: .95rem; margin: .8rem 0 .3rem; }
nav { display: flex; flex-wrap: wrap; gap: .3rem .8rem; padding: .5rem 0;
  border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; font-size: .9rem; }
.muted { color: var(--muted); font-size: .9rem; }
.warn { background: var(--warn-bg); padding: .4rem .6rem; border-radius: 4px; }
.missing { background: var(--miss-bg); color: var(--muted); padding: .4rem .6rem;
  border-radius: 4px; font-style: italic; }
.good { color: #15803d; font-weight: 600; } .bad { color: #b91c1c; font-weight: 600; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: .4rem 0; }
table { border-collapse: collapse; font-size: .85rem; min-width: 50%; }
caption { text-align: left; color: var(--muted); padding: .2rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; text-align: left;
  vertical-align: top; }
th { background: #f9fafb; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
svg.plot { display: block; width: 100%; max-width: 820px; height: auto; margin: .6rem 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr));
  gap: .8rem; }
.sub { margin-left: .6rem; }
details summary { cursor: pointer; color: var(--accent); font-size: .9rem; }
footer { margin-top: 3rem; padding-bottom: 2rem; }
@media (max-width: 600px) {
  body { font-size: 14px; } h1 { font-size: 1.3rem; }
  .plots { grid-template-columns: 1fr; }
  th, td { padding: .2rem .35rem; }
}
"""
