"""Turning runs into answers: read a grid's MLflow runs (`runs`), tabulate and compare them (`compare`: the
table of means and the paired-bootstrap gains, over `captionrec.evaluation`), plot (`plots`), render
(`render`, `sections`) and write report.md / report.csv / report.html (`build`); the caption gallery page
(`gallery`); the experiment grid's tracker (`grid`). The caption-quality sections show `captionrec.analysis`
(report imports analysis, never the reverse).

```python
from captionrec.report import build, gallery
runset = build.load(cfg.tracking, cfg.report)            # the newest grid run's children (or report.filter)
ctx = build.context(runset, cfg.report)
ctx.table                                                # one row per feature set x model, mean +- std
ctx.gains                                                # caption feature vs baseline, paired bootstrap interval
files = build.write_report(ctx, build.out_folder("reports", runset, cfg.report))
```
New report sections register in `captionrec.report.sections` (see its docstring).
"""
