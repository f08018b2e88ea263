"""Caption-quality analysis config (`analyze.*`): the report's sections quality, grounding, audio_classes and
win_loss (captionrec.analysis) read it.

    captionrec report analyze.labels=/data/topics.csv analyze.knn=10
    captionrec report "report.sections=[summary,table,quality,grounding]"   # only some sections
"""

from __future__ import annotations

from dataclasses import dataclass, field

from captionrec.contracts import TRAIN_FEATURE_SETS

# Each caption feature set beside its raw-feature baseline: win / loss cases (target in the top k under one
# run and not under the other).
WIN_LOSS_PAIRS: tuple[str, ...] = ("mllm_video vs videomae", "mllm_audio vs audio_raw", "mllm_av vs title")
# Gains broken down by the target item's audio class ("audio captions help most where audio carries the content").
CLASS_COMPARISONS: tuple[str, ...] = (
    "mllm_audio vs audio_raw",  # audio caption vs raw audio
    "mllm_av vs mllm_video",  # what adding the audio caption to the video caption gives
    "mllm_audio vs title",
    "mllm_video vs videomae",
)


@dataclass(frozen=True)
class AudioClassConfig:
    """The audio class of an item, first rule that holds (from the audio caption row and items.has_audio):

    silent   no usable audio: the audio caption was skipped (no_audio_stream / silent), items.has_audio is
             false, or there is no speech and the top sound tag is a silence label;
    speech   the transcript has at least `speech_min_words` words;
    music    a music label is tagged with score >= `music_min_score`;
    other    audio with neither (a transcript shorter than `speech_min_words`, other sounds);
    unknown  no audio caption row, or one in error (transient: the next caption run retries it).

    Labels match a tag when one of these lower-case substrings occurs in the tag's label (AudioSet names).
    """

    speech_min_words: int = 5
    music_min_score: float = 0.3
    music_labels: tuple[str, ...] = (
        "music",
        "singing",
        "song",
        "musical instrument",
        "guitar",
        "piano",
        "drum",
        "orchestra",
        "violin",
        "synthesizer",
        "choir",
        "rapping",
        "bass",
        "saxophone",
        "trumpet",
        "flute",
    )
    silence_labels: tuple[str, ...] = ("silence",)

    def __post_init__(self) -> None:
        if self.speech_min_words < 1:
            raise ValueError(f"analyze.audio.speech_min_words must be >= 1, got {self.speech_min_words}")
        if not 0.0 <= self.music_min_score <= 1.0:
            raise ValueError(f"analyze.audio.music_min_score must be in [0, 1], got {self.music_min_score}")


def _check_pairs(key: str, pairs: tuple[str, ...]) -> None:
    for c in pairs:
        parts = [p.strip() for p in c.split(" vs ")]
        if len(parts) != 2:
            raise ValueError(f"analyze.{key}: {c!r} is not '<feature set> vs <baseline>'")
        for p in parts:
            unknown = [x for x in p.split("+") if x.strip() not in TRAIN_FEATURE_SETS]
            if unknown:
                raise ValueError(
                    f"analyze.{key}: unknown feature set(s) {unknown} in {c!r}; known: {', '.join(TRAIN_FEATURE_SETS)}"
                )


@dataclass(frozen=True)
class AnalyzeConfig:
    # Topic labels for nearest-neighbour purity: "auto" (<data.source>/manifest.json when that file exists:
    # the bundled sample's ground truth), a path / URI to a manifest.json (items.<id>.topic), a JSON object
    # {item_id: topic}, or a CSV with columns item_id,topic; "none" turns purity off. No labels is a note,
    # not an error.
    labels: str = "auto"
    # Items analysed: all when there are at most this many, else this many picked by a hash of the item id
    # (the same items on every run).
    max_items: int = 5000
    # Neighbours per item for topic purity (purity@1 is always reported too).
    knn: int = 5
    # Two items' vectors with cosine >= this are near-duplicates.
    near_duplicate: float = 0.95
    # Items with the lowest grounding overlap listed for review, per caption kind.
    review_items: int = 10
    # Words that carry no content in a caption (besides English stop words): caption scaffolding.
    ignore_words: tuple[str, ...] = (
        "sound",
        "speech",
        "video",
        "audio",
        "clip",
        "show",
        "shows",
        "showing",
        "scene",
        "image",
        "frame",
        "describe",
        "describes",
        "person",
        "someone",
    )
    audio: AudioClassConfig = field(default_factory=AudioClassConfig)
    # Trained runs: the rank cut-off of a hit (win / loss) and the metrics per audio class.
    top_k: int = 10
    class_comparisons: tuple[str, ...] = CLASS_COMPARISONS
    win_loss: tuple[str, ...] = WIN_LOSS_PAIRS
    # Listed per comparison and model: items with the most wins / losses, and user cases of each outcome.
    win_loss_items: int = 10
    win_loss_cases: int = 10
    # Items per comparison and direction added to the caption gallery (0: none).
    gallery_items: int = 3

    def __post_init__(self) -> None:
        for key in ("max_items", "knn", "top_k"):
            if getattr(self, key) < 1:
                raise ValueError(f"analyze.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.near_duplicate <= 1.0:
            raise ValueError(f"analyze.near_duplicate must be in (0, 1], got {self.near_duplicate}")
        _check_pairs("class_comparisons", self.class_comparisons)
        _check_pairs("win_loss", self.win_loss)
