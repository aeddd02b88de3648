"""Small real texts the task tests train on (written to files by each test)."""

# A few paragraphs of public-domain prose (Jerome K. Jerome, Three Men in a Boat, 1889).
PROSE = """There were four of us - George, and William Samuel Harris, and myself, and Montmorency.
We were sitting in my room, smoking, and talking about how bad we were - bad from a medical point
of view I mean, of course. We were all feeling seedy, and we were getting quite nervous about it.
Harris said he felt such extraordinary fits of giddiness come over him at times, that he hardly
knew what he was doing; and then George said that he had fits of giddiness too, and hardly knew
what he was doing. With me, it was my liver that was out of order. I knew it was my liver that was
out of order, because I had just been reading a patent liver-pill circular, in which were detailed
the various symptoms by which a man could tell when his liver was out of order.
"""

# Short sentences on two topics, for a text classifier that must reach high accuracy.
TEXTS = {
    "weather": [
        "rain falls on the hills",
        "the sun is warm today",
        "snow and wind tonight",
        "a cloudy grey morning",
        "storms roll in from the sea",
        "clear skies and a cold night",
    ],
    "food": [
        "bread and butter for tea",
        "a bowl of hot soup",
        "fresh apples from the market",
        "cheese on toast",
        "rice with beans and fish",
        "a cake with cream on top",
    ],
}


def text_classifier(csv: str, **train: object) -> dict[str, object]:
    """A small bidirectional transformer classifier spec over `csv`'s `text` and `topic` columns."""
    return {
        "name": "topics",
        "data": {
            "train": csv,
            "text_column": "text",
            "label_column": "topic",
            "validation_split": 0.25,
            "tokenizer": {"train": "bpe", "vocab_size": 300},
            "block_size": 12,
        },
        "model": {
            "layers": [
                {"token_embedding": {"dim": 16}},
                {"decoder_block": {"heads": 2, "causal": False, "positions": "learned"}},
                {"pool": {"mode": "mean"}},
                {"dense": {"units": 2}},
            ]
        },
        "train": train,
    }
