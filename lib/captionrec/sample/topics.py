"""Topic vocabulary of the synthetic sample: words, spoken sentences, titles, and per-topic media recipes.

Each topic has a distinct vocabulary (no word is shared between topics, so a topic word recovered by ASR
or found in a caption points at exactly one topic), a set of short spoken sentences that each contain at
least two of its words, title templates that reveal it, and a recipe for its picture (an ffmpeg lavfi
source graph) and its sound bed (lavfi audio sources mixed under the speech).

The recipes take a `random.Random` so every clip of a topic looks and sounds a little different while
staying recognisably of its topic. Nothing here runs ffmpeg: the builders only return filtergraph text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "GENERIC_TITLES",
    "TOPICS",
    "TOPIC_NAMES",
    "Topic",
    "audio_bed_graph",
    "topic_words_in",
    "video_graph",
]


@dataclass(frozen=True)
class Topic:
    """One content topic: vocabulary plus a human description of its picture and sound."""

    name: str
    words: tuple[str, ...]  # lower-case single words, unique across topics
    sentences: tuple[str, ...]  # spoken lines, each with >= 2 of `words` and none of another topic's
    title_templates: tuple[str, ...]  # "{w}" is replaced by one of `words`
    visual: str  # what the picture looks like (for the README / manifest)
    sound: str  # what the sound bed sounds like


TOPICS: tuple[Topic, ...] = (
    Topic(
        name="cooking",
        words=(
            "cooking",
            "kitchen",
            "recipe",
            "pasta",
            "garlic",
            "onion",
            "tomato",
            "sauce",
            "oven",
            "butter",
            "chef",
            "soup",
            "bread",
            "pan",
        ),
        sentences=(
            "Today I make pasta with garlic and fresh tomato sauce.",
            "Put the bread in the oven for ten minutes.",
            "Melt the butter in a hot pan, then add the onion.",
            "This easy soup recipe is ready in twenty minutes.",
            "Every chef needs a sharp knife in the kitchen.",
            "Slice the onion and the garlic very thin.",
            "My grandmother taught me this recipe for tomato soup.",
            "Stir the sauce slowly in the pan so it does not burn.",
        ),
        title_templates=(
            "{w} tips nobody tells you",
            "my {w} recipe, honestly the best",
            "trying the viral {w} hack",
            "5 minute {w} ideas #{n}",
        ),
        visual="gradients source in warm orange / dark red / gold, slowly drifting",
        sound="sizzle: high-passed white noise",
    ),
    Topic(
        name="football",
        words=(
            "football",
            "goal",
            "ball",
            "match",
            "player",
            "team",
            "coach",
            "stadium",
            "referee",
            "penalty",
            "kick",
            "league",
            "fans",
        ),
        sentences=(
            "What a goal, the ball flew into the top corner.",
            "The referee gave a penalty in the last minute.",
            "Our team won the match two goals to one.",
            "The coach told every player to press higher.",
            "The fans in the stadium sang for ninety minutes.",
            "He took the penalty kick and the ball went in.",
            "This player is the best in the league.",
            "Watch how the team passes the ball before the goal.",
        ),
        title_templates=(
            "best {w} moment of the week",
            "{w} skills you have to see",
            "unreal {w} highlights #{n}",
            "when the {w} goes wrong",
        ),
        visual="green pitch (flat colour) with a white ball bouncing across it",
        sound="crowd: pink noise, with a short referee whistle (sine ~2.8 kHz) every few seconds",
    ),
    Topic(
        name="cats",
        words=(
            "cat",
            "cats",
            "kitten",
            "meow",
            "purr",
            "whiskers",
            "paws",
            "fur",
            "litter",
            "mouse",
            "nap",
            "tail",
            "claws",
        ),
        sentences=(
            "My cat sleeps all day and licks her fur.",
            "The little kitten chases its own tail again.",
            "Listen to my cat purr when I scratch her fur.",
            "This kitten loves to play with a toy mouse.",
            "Look at those soft paws and long whiskers.",
            "Every cat needs a clean litter box.",
            "Our cat knocked the glass off the table, meow.",
            "The kitten takes a nap in the laundry basket.",
        ),
        title_templates=(
            "my {w} did it again",
            "{w} being dramatic for 10 seconds",
            "pov: your {w} wants food",
            "the most chaotic {w} #{n}",
        ),
        visual="Mandelbrot fractal zoom (colourful, organic swirls)",
        sound="purr: a low tone amplitude-modulated at ~25 Hz",
    ),
    Topic(
        name="cars",
        words=(
            "car",
            "cars",
            "engine",
            "wheels",
            "drive",
            "road",
            "speed",
            "tires",
            "brakes",
            "garage",
            "fuel",
            "highway",
            "driver",
        ),
        sentences=(
            "This car has a powerful engine and great speed.",
            "We drive on the highway at night.",
            "Check the tires before a long winter road.",
            "The driver checks the brakes in the garage.",
            "Listen to the engine of my car when I press the pedal.",
            "How much fuel does this car use on the highway?",
            "New wheels make the car look completely different.",
            "Test drive of the fastest electric car on the road.",
        ),
        title_templates=(
            "{w} review in 60 seconds",
            "is this the best {w} ever?",
            "{w} sounds at 3am",
            "fixing my {w}, part {n}",
        ),
        visual="testsrc2 pattern (colour bars, moving gradient bar, squares), hue-shifted per clip",
        sound="engine: low-passed sawtooth around 90 Hz over brown noise",
    ),
    Topic(
        name="music",
        words=(
            "music",
            "song",
            "guitar",
            "piano",
            "drums",
            "singer",
            "concert",
            "band",
            "melody",
            "chords",
            "rhythm",
            "album",
        ),
        sentences=(
            "I play this song on the guitar every morning.",
            "The band played our favourite album at the concert.",
            "Learn this piano melody with just three chords.",
            "The drums keep the rhythm for the whole band.",
            "Our singer wrote a new song about summer.",
            "Here are simple guitar chords for every song.",
            "The concert crowd sang every song with the band.",
            "This melody sounds great on the piano.",
        ),
        title_templates=(
            "{w} cover, first try",
            "this {w} gives me chills",
            "learn this {w} in one minute",
            "late night {w} session #{n}",
        ),
        visual="cellular automaton (cellauto) pattern tinted magenta",
        sound="a sustained major chord of three sines",
    ),
    Topic(
        name="travel",
        words=(
            "travel",
            "trip",
            "hotel",
            "airport",
            "flight",
            "city",
            "mountains",
            "passport",
            "suitcase",
            "train",
            "map",
            "tourist",
        ),
        sentences=(
            "We landed at the airport after a long flight.",
            "Pack your passport and suitcase the night before your trip.",
            "The hotel has a view over the old city.",
            "We took the train through the mountains.",
            "Every tourist should visit this city at least once.",
            "Here is my travel map for a two week trip.",
            "Our flight was late, so we explored the airport.",
            "The best hotel in the mountains costs less than you think.",
        ),
        title_templates=(
            "{w} vlog day {n}",
            "things I wish I knew before this {w}",
            "cheap {w} hacks",
            "{w} diaries, part {n}",
        ),
        visual="blue sky with drifting white clouds (Perlin noise)",
        sound="wind: brown noise",
    ),
    Topic(
        name="gaming",
        words=(
            "game",
            "gaming",
            "level",
            "controller",
            "console",
            "boss",
            "online",
            "quest",
            "character",
            "sword",
            "win",
            "gamer",
        ),
        sentences=(
            "I finally beat the final boss in this game.",
            "This level is the hardest in the whole game.",
            "Grab your controller, we play online tonight.",
            "My character found a new sword on the quest.",
            "A new record on my favourite console game.",
            "Watch me win this online round with one life left.",
            "The boss fight on level ten took three hours.",
            "Choose your character and start the quest.",
        ),
        title_templates=(
            "{w} rage moment #{n}",
            "this {w} trick is broken",
            "{w} speedrun attempt {n}",
            "the hardest {w} ever made",
        ),
        visual="Game of Life (life source): yellow cells and cyan mould on dark navy",
        sound="8-bit bleeps: a square wave stepping through pitches",
    ),
    Topic(
        name="fitness",
        words=(
            "fitness",
            "workout",
            "gym",
            "muscles",
            "squats",
            "running",
            "exercise",
            "weights",
            "stretch",
            "training",
            "cardio",
            "sweat",
        ),
        sentences=(
            "This workout builds strong muscles in twenty minutes.",
            "Do ten squats and a short stretch every morning.",
            "Stretch before running to avoid an injury.",
            "Lift the weights slowly to build your muscles.",
            "My gym training plan for a strong body.",
            "This cardio exercise will make you sweat.",
            "Running every day changed my fitness completely.",
            "Finish the workout with a long stretch.",
        ),
        title_templates=(
            "my morning {w} routine",
            "{w} challenge day {n}",
            "do this {w} every day",
            "{w} mistakes everyone makes",
        ),
        visual="flat colour cycling through hues with a pulsing brightness",
        sound="beat: a decaying 60 Hz kick at ~120 bpm",
    ),
    Topic(
        name="ocean",
        words=(
            "ocean",
            "beach",
            "waves",
            "surf",
            "boat",
            "fish",
            "sand",
            "shark",
            "dolphin",
            "island",
            "sea",
            "shell",
            "diving",
        ),
        sentences=(
            "The waves on this beach are perfect to surf.",
            "We saw a dolphin swimming next to our boat.",
            "Diving with the fish near the island.",
            "The ocean was calm and the sand was warm.",
            "A shark swam under our boat in the deep sea.",
            "I found a shell on the beach at sunrise.",
            "Learn to surf the big ocean waves.",
            "This island has the clearest sea I have ever seen.",
        ),
        title_templates=("{w} day, no filter", "you have to see this {w}", "{w} sounds to relax", "{w} adventure #{n}"),
        visual="concentric rings (zoneplate) in deep blue / teal, moving",
        sound="surf: pink noise with a slow tremolo (waves)",
    ),
    Topic(
        name="space",
        words=(
            "space",
            "rocket",
            "planet",
            "moon",
            "stars",
            "astronaut",
            "galaxy",
            "orbit",
            "telescope",
            "mars",
            "launch",
            "satellite",
        ),
        sentences=(
            "The rocket launch was delayed by one day.",
            "An astronaut lives in orbit for six months.",
            "With my telescope I can see the moon and stars.",
            "Mars is the red planet next to Earth.",
            "This galaxy holds billions of stars.",
            "The satellite moves in orbit around the planet.",
            "Watch the rocket launch into space.",
            "How would an astronaut walk on the moon?",
        ),
        title_templates=(
            "{w} facts that sound fake",
            "what the {w} really looks like",
            "{w} explained in 30 seconds",
            "{w} update #{n}",
        ),
        visual="white Sierpinski fractal on black, shifting",
        sound="drone: two low sines beating slowly, plus faint violet noise",
    ),
)

TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)
_BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}

# Titles that say nothing about the topic ("{n}" is a number). Some carry commas and quotes on purpose:
# the titles CSV must quote them properly.
GENERIC_TITLES: tuple[str, ...] = (
    "you won't believe this #{n}",
    "wait for the end...",
    "day {n} of posting until I go viral",
    "this changed everything, honestly",
    "POV: it's Monday again",
    "I can't stop watching this",
    "part {n}",
    "rate this 1-10",
    "no way this happened, right?",
    'he said "trust me" #{n}',
    "watch till the end \U0001f62e",
    "caught on camera, part {n}",
    "the most satisfying video ever",
    "storytime: what happened next",
    "just a normal day #{n}",
    "which one are you? 1, 2 or 3",
    "reply to @user{n}",
    "so this happened today",
)

_WORD_RE = re.compile(r"[a-z]+")


def topic_words_in(text: str, topic: str) -> list[str]:
    """The words of `topic` that occur in `text` (as whole words, case-insensitive), in text order."""
    vocab = set(_BY_NAME[topic].words)
    out: list[str] = []
    for tok in _WORD_RE.findall(text.lower()):
        if tok in vocab and tok not in out:
            out.append(tok)
    return out


def _f(x: float, nd: int = 3) -> str:
    """Stable short float text for filter arguments."""
    return f"{round(x, nd):g}"


def _jitter_rgb(rng: random.Random, rgb: int, amount: int = 24) -> str:
    parts = [(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255]
    parts = [min(255, max(0, p + rng.randint(-amount, amount))) for p in parts]
    return "0x{:02x}{:02x}{:02x}".format(*parts)


# --- picture recipes: each returns a filtergraph chain producing one video stream (no output label) ---


def _v_cooking(w: int, h: int, r: int, rng: random.Random) -> str:
    c0, c1, c2 = _jitter_rgb(rng, 0xFF8C00), _jitter_rgb(rng, 0x8B1A1A), _jitter_rgb(rng, 0xFFD700)
    return (
        f"gradients=s={w}x{h}:r={r}:c0={c0}:c1={c1}:c2={c2}:n=3:speed={_f(rng.uniform(0.01, 0.05))}"
        f":seed={rng.randint(1, 10**6)}"
    )


def _v_football(w: int, h: int, r: int, rng: random.Random) -> str:
    ball = max(6, min(w, h) // 14)
    vx, amp, fy = rng.uniform(40, 110), rng.uniform(0.15, 0.35) * h, rng.uniform(1.5, 4.0)
    return (
        f"color=c={_jitter_rgb(rng, 0x1F7A1F, 16)}:s={w}x{h}:r={r}[bg];"
        f"color=c=white:s={ball}x{ball}:r={r}[ball];"
        f"[bg][ball]overlay=x='mod(t*{_f(vx)}\\,W)':y='H/2+{_f(amp)}*sin(t*{_f(fy)})':shortest=1"
    )


_MANDEL_POINTS = (
    (-0.743643887, 0.131825904),
    (-0.7453, 0.1127),
    (-0.16, 1.0405),
    (-1.25066, 0.02012),
    (0.2549, 0.0005),
)


def _v_cats(w: int, h: int, r: int, rng: random.Random) -> str:
    x, y = rng.choice(_MANDEL_POINTS)
    return (
        f"mandelbrot=s={w}x{h}:r={r}:start_x={x}:start_y={y}:start_scale={_f(rng.uniform(1.0, 3.0))}"
        f":end_scale={_f(rng.uniform(0.05, 0.4))}"
    )


def _v_cars(w: int, h: int, r: int, rng: random.Random) -> str:
    return f"testsrc2=s={w}x{h}:r={r},hue=h={rng.randint(-40, 40)}"


def _v_music(w: int, h: int, r: int, rng: random.Random) -> str:
    rule = rng.choice((30, 45, 73, 90, 105, 110, 150))
    return (
        f"cellauto=s={w}x{h}:r={r}:rule={rule}:seed={rng.randint(1, 10**6)},format=rgb24,"
        f"lutrgb=r=val:g=val*{_f(rng.uniform(0.15, 0.4))}:b=val*{_f(rng.uniform(0.8, 1.0))}"
    )


def _v_travel(w: int, h: int, r: int, rng: random.Random) -> str:
    k = "clip((val-120)*4\\,0\\,255)"
    return (
        f"perlin=s={w}x{h}:r={r}:octaves=4:persistence=0.6:xscale={_f(rng.uniform(1.0, 2.0))}"
        f":yscale={_f(rng.uniform(2.0, 4.0))}:tscale={_f(rng.uniform(0.2, 0.5))}:random_mode=seed"
        f":random_seed={rng.randint(1, 10**6)},format=rgb24,"
        f"lutrgb=r='{k}*0.7+60':g='{k}*0.6+110':b='{k}*0.2+215'"
    )


def _v_gaming(w: int, h: int, r: int, rng: random.Random) -> str:
    return (
        f"life=s={w}x{h}:r={r}:mold=10:ratio={_f(rng.uniform(0.1, 0.3))}:seed={rng.randint(1, 10**6)}"
        f":life_color={_jitter_rgb(rng, 0xFFEE00)}:death_color=0x001028:mold_color={_jitter_rgb(rng, 0x00B4FF)}"
    )


def _v_fitness(w: int, h: int, r: int, rng: random.Random) -> str:
    return (
        f"color=c={_jitter_rgb(rng, 0xCC3333, 30)}:s={w}x{h}:r={r},"
        f"hue=H='t*{_f(rng.uniform(0.8, 2.5))}':b='sin(t*{_f(rng.uniform(4, 8))})'"
    )


def _v_ocean(w: int, h: int, r: int, rng: random.Random) -> str:
    return (
        f"zoneplate=s={w}x{h}:r={r}:kt2={rng.randint(6, 14)}:kx2={rng.choice((128, 256, 384))}"
        f":ky2={rng.choice((128, 256, 384))},format=rgb24,"
        f"lutrgb=r=val*0.1:g=val*{_f(rng.uniform(0.4, 0.6))}+40:b=val*0.5+120"
    )


def _v_space(w: int, h: int, r: int, rng: random.Random) -> str:
    return (
        f"sierpinski=s={w}x{h}:r={r}:seed={rng.randint(1, 10**6)}:jump={rng.randint(20, 80)}"
        f":type={rng.choice(('triangle', 'carpet'))}"
    )


_VIDEO: dict[str, Callable[[int, int, int, random.Random], str]] = {
    "cooking": _v_cooking,
    "football": _v_football,
    "cats": _v_cats,
    "cars": _v_cars,
    "music": _v_music,
    "travel": _v_travel,
    "gaming": _v_gaming,
    "fitness": _v_fitness,
    "ocean": _v_ocean,
    "space": _v_space,
}


# --- sound recipes: each returns a filtergraph producing one mono audio stream at `sr` (no output label) ---


def _a_cooking(sr: int, rng: random.Random) -> str:
    return (
        f"anoisesrc=c=white:r={sr}:a={_f(rng.uniform(0.03, 0.05))}:seed={rng.randint(1, 10**6)},"
        f"highpass=f={rng.randint(2000, 3500)}"
    )


def _a_football(sr: int, rng: random.Random) -> str:
    period = rng.uniform(3.0, 5.0)
    return (
        f"anoisesrc=c=pink:r={sr}:a={_f(rng.uniform(0.04, 0.07))}:seed={rng.randint(1, 10**6)}[crowd];"
        f"sine=f={rng.randint(2600, 3000)}:r={sr},volume='0.12*lt(mod(t\\,{_f(period)})\\,0.3)':eval=frame[wh];"
        f"[crowd][wh]amix=inputs=2:normalize=0"
    )


def _a_cats(sr: int, rng: random.Random) -> str:
    f0, fm = rng.randint(110, 170), rng.uniform(22, 28)
    return f"aevalsrc='0.07*sin(2*PI*{f0}*t)*(0.5+0.5*sin(2*PI*{_f(fm)}*t))':s={sr}"


def _a_cars(sr: int, rng: random.Random) -> str:
    f0 = rng.uniform(75, 110)
    return (
        f"aevalsrc='0.05*(2*mod({_f(f0)}*t\\,1)-1)':s={sr},lowpass=f=800[eng];"
        f"anoisesrc=c=brown:r={sr}:a=0.03:seed={rng.randint(1, 10**6)}[rum];[eng][rum]amix=inputs=2:normalize=0"
    )


def _a_music(sr: int, rng: random.Random) -> str:
    root = rng.choice((196.0, 220.0, 246.94, 261.63, 293.66))
    third, fifth = root * 1.2599, root * 1.4983  # major third, perfect fifth (equal temperament)
    return f"aevalsrc='0.025*(sin(2*PI*{_f(root, 2)}*t)+sin(2*PI*{_f(third, 2)}*t)+sin(2*PI*{_f(fifth, 2)}*t))':s={sr}"


def _a_travel(sr: int, rng: random.Random) -> str:
    return f"anoisesrc=c=brown:r={sr}:a={_f(rng.uniform(0.08, 0.14))}:seed={rng.randint(1, 10**6)}"


def _a_gaming(sr: int, rng: random.Random) -> str:
    base, step = rng.choice((330, 392, 440, 494)), rng.choice((3, 4, 6))
    return f"aevalsrc='0.03*sgn(sin(2*PI*({base}+{base // 2}*floor(mod(t*{step}\\,4)))*t))':s={sr}"


def _a_fitness(sr: int, rng: random.Random) -> str:
    beat = 60.0 / rng.uniform(110, 130)
    return f"aevalsrc='0.15*sin(2*PI*60*t)*exp(-12*mod(t\\,{_f(beat, 4)}))':s={sr}"


def _a_ocean(sr: int, rng: random.Random) -> str:
    return (
        f"anoisesrc=c=pink:r={sr}:a={_f(rng.uniform(0.08, 0.13))}:seed={rng.randint(1, 10**6)},"
        f"tremolo=f={_f(rng.uniform(0.12, 0.25))}:d=0.8"
    )


def _a_space(sr: int, rng: random.Random) -> str:
    f0 = rng.uniform(50, 65)
    return (
        f"aevalsrc='0.035*(sin(2*PI*{_f(f0)}*t)+sin(2*PI*{_f(f0 * 1.5 + 0.7)}*t))':s={sr}[dr];"
        f"anoisesrc=c=violet:r={sr}:a=0.01:seed={rng.randint(1, 10**6)}[vn];[dr][vn]amix=inputs=2:normalize=0"
    )


_AUDIO: dict[str, Callable[[int, random.Random], str]] = {
    "cooking": _a_cooking,
    "football": _a_football,
    "cats": _a_cats,
    "cars": _a_cars,
    "music": _a_music,
    "travel": _a_travel,
    "gaming": _a_gaming,
    "fitness": _a_fitness,
    "ocean": _a_ocean,
    "space": _a_space,
}


def video_graph(topic: str, width: int, height: int, fps: int, rng: random.Random) -> str:
    """lavfi filtergraph text for `topic`'s picture (one unlabelled video output)."""
    return _VIDEO[topic](width, height, fps, rng)


def audio_bed_graph(topic: str, sample_rate: int, rng: random.Random) -> str:
    """lavfi filtergraph text for `topic`'s sound bed (one unlabelled mono audio output)."""
    return _AUDIO[topic](sample_rate, rng)
