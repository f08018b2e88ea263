"""captionrec: MLLM captions as item features for video recommendation (arXiv 2508.09789).

Nothing is created at import time: sessions, models and tables are built by the functions that need them.
"""

__version__ = "0.1.0"
