import collections
import json

from finetune.config.sections import Splits
from finetune.tasks.chat import TASK, ChatData, _key


def test_chatterbot_topics_fill_each_split_by_their_distinct_dialogues_and_never_straddle_two():
    frame = TASK.read(ChatData(splits=Splits(train=0.7, val=0.15, test=0.15))).frame
    assert frame.groupby("origin")["split"].nunique().max() == 1  # a topic lies in one split: held-out topics are unseen
    distinct = frame.assign(key=frame["input"].map(lambda text: _key(json.loads(text)))).drop_duplicates("key")
    shares = {name: count / len(distinct) for name, count in collections.Counter(distinct["split"]).items()}
    # counted with the repeats (tech_support is 1,050 copies of 10 dialogues) train held a quarter of what preprocess kept
    assert shares["train"] > 0.6 and 0.08 < shares["val"] < 0.25 and 0.08 < shares["test"] < 0.25, shares
