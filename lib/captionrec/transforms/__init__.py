"""The stages' Spark transforms, DataFrame in / DataFrame out (the stage modules in `pipeline/` call them):

    ingest.py         raw listings -> clean items / interactions / quarantine rows (`pipeline/ingest.py`)
    embed.py          captions / items -> one row per (item, feature set) to encode (`pipeline/embed.py`)

The train stage's (`pipeline/train.py`):

    splits.py         interactions -> interactions + (window, role): rolling windows or leave-one-out
    sequences.py      item / user indices, the `train_sequences` table (training rows and evaluation
                      cases), its per-role counts, per-window item counts (popularity, training items)
    item_features.py  the frozen item vectors of the requested feature sets, aligned with the item index
    petastorm.py      petastorm converters over the training rows (where petastorm imports)

Everything after these transforms is pure torch (`captionrec.training`, `captionrec.models`).
"""
