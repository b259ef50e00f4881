"""A data file as a model sees it (splits.py): the facts a model takes from it, and the items each
sample is marked against."""

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.splits import Splits
from wavenet_names.words import Seen


def test_samples_are_marked_training_held_out_or_new(trained, small_data_file):
    """72 of 1,384 "new" samples were names of val or test: the checkpoint now holds those too."""
    splits = Splits.read(small_data_file)
    seen = Seen.of_checkpoint(load_checkpoint(trained / "model.pt"))
    assert seen == Seen(frozenset(splits.train), frozenset(splits.val + splits.test)) == splits.seen
    train, val, test = splits.train[0], splits.val[0], splits.test[0]
    assert [seen.mark(name) for name in (train, val, test, "zzqx")] == [" *", " +", " +", ""]
    earlier = {"train_words": "\n".join(splits.train)}  # an earlier version's checkpoint: no held-out words
    assert Seen.of_checkpoint(earlier).mark(val) == "" and Seen.of_checkpoint(earlier).mark(train) == " *"
