"""The page's own CSS (``demo.launch(css=CSS)``): readable tables and chips, and the phone layout.

Below 600 px the prompt stacks above the model list and the Compare columns stack; tables and charts
scroll sideways inside their own box instead of shrinking or breaking numbers.
"""

CSS = """
.num, td.num, .nowrap, .answer-chip b { white-space: nowrap; }
.table-scroll { overflow-x: auto; max-width: 100%; }
table.agreement, table.scores { border-collapse: collapse; font-size: 0.92em; margin: 4px 0 10px; }
table.agreement td, table.agreement th, table.scores td, table.scores th {
  padding: 3px 10px; border-bottom: 1px solid var(--border-color-primary); text-align: left;
}
table.scores td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.scores th.row { font-weight: normal; white-space: nowrap; }
.answer-strip { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 2px 0; }
.answer-ref { font-size: 0.9em; margin-right: 4px; }
.answer-chip {
  border-radius: 12px; padding: 2px 10px; font-size: 0.9em; max-width: 100%;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
}
.answer-chip .said { opacity: 0.8; }
.answer-chip.right { background: #dcfce7; color: #14532d; border: 1px solid #86efac; }
.answer-chip.wrong { background: #fee2e2; color: #7f1d1d; border: 1px solid #fca5a5; }
.answer-chip.none {
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary);
}
/* Gradio's tables: a number is never split over lines */
[data-testid="dataframe"] td, [data-testid="dataframe"] th { white-space: nowrap; }
@media (max-width: 600px) {
  .stack-on-phone { flex-direction: column !important; }
  .stack-on-phone > * { width: 100% !important; min-width: 0 !important; flex: 1 1 auto !important; }
  .compare-columns { flex-direction: column !important; }
  .compare-columns > * { width: 100% !important; min-width: 0 !important; }
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; }
}
"""
