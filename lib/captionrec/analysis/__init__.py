"""Caption-quality analysis (issue 13, part 3): are the captions any good, and where do they help?

- `text`: length, distinct-1/2, exact duplicates, content words;
- `vectors`: near-duplicate share and nearest-neighbour topic purity of item vectors (caption vs title vs
  VideoMAE / raw audio);
- `grounding`: content-word overlap of the audio caption with its transcript / tags and of the video caption
  with the title; the lowest-overlap items for review;
- `audio`: each item's audio class (speech, music, other, silent, unknown);
- `outcomes`: trained runs per audio class of the target, and win / loss cases of caption vs raw features;
- `inputs`: the tables (through the TableStore) and topic labels; `core`: all of it as one `Analysis`.

Metrics are Spark-free (pandas / numpy; HR@k / nDCG@k and the paired bootstrap are `captionrec.evaluation`);
only `inputs.read_inputs` uses the store's Spark DataFrames. The report shows the analysis (report imports
analysis, never the reverse: `runset` is any object with the report's RunSet fields).

```python
from captionrec.analysis import core, inputs
data = inputs.read_inputs(store, cfg.analyze.max_items, cfg.analyze.labels, cfg.data.source)
a = core.analyze(data, runset, cfg.analyze, cfg.report)      # runset: captionrec.report.build.load(...) or None
a.quality, a.vectors, a.grounding, a.class_gains, a.win_loss  # pandas frames; a.notes: what could not be computed
```
The report shows it through the sections `quality`, `grounding`, `audio_classes` and `win_loss`.
"""
