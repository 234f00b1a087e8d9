"""The batch pipeline: epochs, mixtures, host shards and exact resume from a saved iterator state."""

import collections
import json

import numpy as np
import pytest

from itjax.data.pipeline import Pipeline, Source


def make_source(name, tag, n, seed, weight=1.0):
  """Examples whose first token (tag * 1000 + index) names them; random lengths and masks."""
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(n):
    length = int(rng.integers(3, 40))
    ids = np.concatenate([[tag * 1000 + i], rng.integers(1, 999, length - 1)]).astype(np.int32)
    mask = rng.random(length) < 0.6
    mask[0], mask[-1] = False, True
    examples.append((ids, mask))
  return Source(name, examples, weight)


SOURCES = [make_source("instructions", 1, 37, 0, 0.8), make_source("text", 2, 11, 1, 0.2)]


def pipeline(**kw):
  args = dict(sources=SOURCES, max_len=64, batch_size=4, seed=3, epochs=3, process_index=0, process_count=1)
  return Pipeline(**{**args, **kw})


def seen(batch):
  """The example names in a batch, row by row, segment by segment."""
  out = []
  for inputs, seg in zip(batch["inputs"], batch["segment_ids"]):
    out += [int(inputs[np.flatnonzero(seg == s)[0]]) for s in range(1, seg.max() + 1)]
  return out


def test_epochs_and_mixture_weights():
  batches = list(pipeline())
  names = [n for b in batches for n in seen(b)]
  counts = collections.Counter(n // 1000 for n in names)
  assert counts[1] == 3 * 37  # every instruction example exactly once per epoch ...
  assert collections.Counter(n for n in names if n // 1000 == 1) == {1000 + i: 3 for i in range(37)}
  assert counts[2] == 3 * round(37 * 0.2 / 0.8)  # ... and text at its weight: 9 per epoch
  assert all(b["inputs"].shape == (4, 64) and b["inputs"].dtype == np.int32 for b in batches)
  assert batches[-1]["weights"].sum() > 0
  assert seen(next(iter(pipeline(seed=3)))) == seen(batches[0])
  assert seen(next(iter(pipeline(seed=4)))) != seen(batches[0])
  unpacked = list(pipeline(pack=False, epochs=1))
  assert all(b["segment_ids"].max() <= 1 for b in unpacked) and len(unpacked) == -(-(37 + 9) // 4)


@pytest.mark.parametrize("stop_after", [1, 5, 9])  # within the first epoch, at its end, in the second
def test_resume_yields_the_uninterrupted_batches(stop_after):
  straight = list(pipeline())
  first = pipeline()
  for _ in range(stop_after):
    next(first)
  state = json.loads(json.dumps(first.get_state()))  # the state survives a JSON round trip
  resumed = pipeline()
  resumed.set_state(state)
  rest = list(resumed)
  assert len(rest) == len(straight) - stop_after
  for a, b in zip(rest, straight[stop_after:]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  with pytest.raises(ValueError, match="other data or settings"):
    pipeline(seed=4).set_state(state)


def test_hosts_see_disjoint_shards_whose_union_is_the_epoch():
  whole = [n for b in pipeline(epochs=1) for n in seen(b)]
  hosts = [list(pipeline(epochs=1, process_index=h, process_count=2)) for h in range(2)]
  assert len(hosts[0]) == len(hosts[1])  # every host takes the same number of steps
  assert all(b["inputs"].shape == (2, 64) for h in hosts for b in h)
  names = [[n for b in h for n in seen(b)] for h in hosts]
  assert not set(names[0]) & set(names[1])
  assert sorted(names[0] + names[1]) == sorted(whole)
  with pytest.raises(ValueError, match="batch_size 3 is not divisible by the 2 processes"):
    pipeline(batch_size=3, process_index=0, process_count=2)


def test_bad_pipeline_settings():
  with pytest.raises(ValueError, match="instructions: an example fills .* > max_len 8"):
    pipeline(max_len=8)
  with pytest.raises(ValueError, match="text: weight must be > 0"):
    Pipeline([SOURCES[0], make_source("text", 2, 3, 0, 0.0)], 64, 4, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="empty: no usable examples"):
    Pipeline([Source("empty", [])], 64, 4, process_index=0, process_count=1)


def test_data_files_to_batches(tmp_path):
  """Files -> tokenized sources (weights from the spec) -> batches; bad records raise or are counted."""
  from conftest import make_llama3_style_tokenizer
  from itjax.data import dataset
  from itjax.data.formats import DataError
  from itjax.data.tokenizer import HFTokenizer
  tok = HFTokenizer(make_llama3_style_tokenizer())
  chats = tmp_path / "chats.jsonl"
  chats.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}"}) + "\n" for i in range(10)))
  text = tmp_path / "text.jsonl"
  text.write_text(json.dumps({"text": "The quick brown fox."}) + "\n" + "{oops\n")
  assert dataset.parse_sources(f"{chats}:0.8, {text}:0.2") == [(str(chats), 0.8), (str(text), 0.2)]
  assert dataset.parse_sources(f"{chats}") == [(str(chats), 1.0)]
  with pytest.raises(DataError, match="text.jsonl:2: not valid JSON"):
    dataset.load_sources(f"{chats}:0.8,{text}:0.2", tok, dataset.Options(max_len=64))
  options = dataset.Options(max_len=64, on_error="skip")
  sources, report = dataset.load_sources(f"{chats}:0.8,{text}:0.2", tok, options)
  assert [(s.name, s.weight, len(s.examples)) for s in sources] == [(str(chats), 0.8, 10), (str(text), 0.2, 1)]
  assert (report.records, report.used, report.skipped) == (12, 11, 1)
  batches = list(Pipeline(sources, 64, 2, epochs=1, pad_id=tok.pad_id, process_index=0, process_count=1))
  assert sum(int(b["weights"].sum()) for b in batches) == 10 * 2 + 2 * (report.target_tokens - 20)  # text x2


def test_mix_reports_examples_and_trained_token_shares():
  """Weights count examples; the loss counts trained tokens: a source of long answers outweighs its example share."""
  short = Source("short", [(np.arange(5), np.array([0, 0, 0, 1, 1], bool))] * 10)  # 2 trained tokens each
  long = Source("long", [(np.arange(9), np.array([0] + [1] * 8, bool))] * 4, weight=0.5)  # 8 trained tokens each
  mix = Pipeline([short, long], max_len=16, batch_size=2, process_index=0, process_count=1).mix()
  assert [(name, n) for name, n, _ in mix] == [("short", 10), ("long", 5)]
  assert np.allclose([share for *_, share in mix], [20 / 60, 40 / 60])


def test_drop_types_leaves_out_training_records_by_type_and_counts_them(tmp_path):
  """data.drop_types: records carrying a listed type are left out (counted per type), others and untyped kept; a
  type no record carries is refused as the typo it most likely is, and so is a malformed `types` field."""
  from conftest import make_llama3_style_tokenizer
  from itjax.data import dataset
  from itjax.data.formats import DataError
  from itjax.data.tokenizer import HFTokenizer
  tok = HFTokenizer(make_llama3_style_tokenizer())
  types = [["sort_words", "quotes"], ["arithmetic"], ["arithmetic", "json"], ["json"], ["date_add", "quotes"]]
  tasks = tmp_path / "tasks.jsonl"
  tasks.write_text("".join(json.dumps({"instruction": f"Task {i}.", "output": f"{i}", "types": t}) + "\n"
                           for i, t in enumerate(types)))
  plain = tmp_path / "plain.jsonl"
  plain.write_text(json.dumps({"instruction": "Hi.", "output": "Hello."}) + "\n")
  options = dataset.Options(max_len=64)
  sources, report = dataset.load_sources(f"{tasks},{plain}:0.5", tok, options, ("arithmetic", "date_add"))
  assert [len(s.examples) for s in sources] == [2, 1]
  assert (report.records, report.left_out, report.used) == (6, 3, 3)
  assert report.left_out_by_type == {"arithmetic": 2, "date_add": 1}
  assert report.summary()["left_out"] == 3
  whole, _ = dataset.load_sources(f"{tasks},{plain}:0.5", tok, options)
  assert [len(s.examples) for s in whole] == [5, 1]
  kept_ids = [ids.tolist() for ids, _ in sources[0].examples]
  assert kept_ids == [whole[0].examples[0][0].tolist(), whole[0].examples[3][0].tolist()]  # records 0 and 3, in order
  with pytest.raises(ValueError, match="data.drop_types: no record of .* has type 'arithmatic'; types present: "
                                       "arithmetic, date_add, json, quotes, sort_words"):
    dataset.load_sources(str(tasks), tok, options, ("arithmatic",))
  with pytest.raises(ValueError, match="data.drop_types: it leaves nothing of .*only.jsonl"):
    only = tmp_path / "only.jsonl"
    only.write_text(json.dumps({"instruction": "x", "output": "y", "types": ["json"]}) + "\n")
    dataset.load_sources(f"{only},{plain}", tok, options, ("json",))
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"instruction": "x", "output": "y", "types": "json"}) + "\n")
  with pytest.raises(DataError, match="bad.jsonl:1: 'types' is not a list of strings"):
    dataset.load_sources(str(bad), tok, options)


def test_the_resume_fingerprint_is_the_data_and_settings_not_paths_or_hosts():
  """Moved files and another number of processes (the same global batch) resume; other tokens or settings do not."""
  base = pipeline(epochs=1).fingerprint()
  moved = [Source(f"/elsewhere/{s.name}.jsonl", s.examples, s.weight) for s in SOURCES]
  assert pipeline(sources=moved, epochs=1).fingerprint() == base
  halves = [pipeline(epochs=1, process_index=i, process_count=2) for i in range(2)]
  assert {p.fingerprint() for p in halves} == {base}
  one = pipeline(epochs=1)
  for _ in range(3):
    next(one)
  for half in halves:
    half.set_state(one.get_state())  # resumed on two hosts: together they give the one host's next batch
  nxt = next(one)
  rows = [next(h) for h in halves]
  assert all(np.array_equal(np.concatenate([r[k] for r in rows]), nxt[k]) for k in nxt)
  changed = [Source(SOURCES[0].name, [(SOURCES[0].examples[0][0] + 1, SOURCES[0].examples[0][1])]
                    + SOURCES[0].examples[1:], SOURCES[0].weight), SOURCES[1]]
  assert pipeline(sources=changed, epochs=1).fingerprint() != base
  assert pipeline(epochs=1, seed=4).fingerprint() != base
  with pytest.raises(ValueError, match="fingerprint"):
    pipeline(epochs=1, seed=4).set_state(one.get_state())
