"""The train stage's Spark transforms, DataFrame in / DataFrame out (`pipeline/train.py` calls them):

    splits.py         interactions -> interactions + (window, role): rolling windows or leave-one-out
    sequences.py      item / user indices, the `train_sequences` table (training rows and evaluation
                      cases), its per-role counts, per-window item counts (popularity, training items)
    item_features.py  the frozen item vectors of the requested feature sets, aligned with the item index
    petastorm.py      petastorm converters over the training rows (where petastorm imports)

Everything after these transforms is pure torch (`captionrec.training`, `captionrec.models`).
"""
