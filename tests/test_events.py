"""Event-camera inputs: first-event maps, their binning front end, and tonic datasets (generated
here with tonic's own event types; nothing is downloaded)."""
import numpy as np
import pytest
import torch

import data
import event_recordings
import pipeline
import train
from frontends import EventBins
from s1c1 import FrontEnd, encode
from utils import UserError

EVENT_DTYPE = [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")]


def events(rows, dtype=EVENT_DTYPE):
    return np.array([tuple(r) for r in rows], dtype=dtype)


def test_first_event_maps_keep_each_pixel_and_polarity_s_first_event():
    # (x, y, t, p): pixel (1, 0) ON at 100 then again at 900; OFF at 400; pixel (2, 1) ON at 1100
    stream = events([(1, 0, 900, 1), (1, 0, 100, 1), (1, 0, 400, 0), (2, 1, 1100, 1), (0, 2, 600, 0)])
    maps = event_recordings.first_event_maps(stream, (3, 3, 2))           # t0 = 100, duration 1000
    expected = np.full((2, 3, 3), 255, np.uint8)
    level = lambda t: int(np.floor(254.999 * (t - 100) / 1000))
    expected[1, 0, 1] = level(100)
    expected[0, 0, 1] = level(400)
    expected[1, 1, 2] = level(1100)
    expected[0, 2, 0] = level(600)
    assert np.array_equal(maps, expected) and maps[1, 1, 2] == 254
    # a fixed duration drops the events after it
    short = event_recordings.first_event_maps(stream, (3, 3, 2), duration=500)
    assert short[1, 1, 2] == 255 and short[0, 0, 1] == int(np.floor(254.999 * 300 / 500))
    assert (event_recordings.first_event_maps(events([]), (4, 2, 2)) == 255).all()
    with pytest.raises(ValueError, match="outside the 3x3 sensor"):
        event_recordings.first_event_maps(events([(3, 0, 0, 1)]), (3, 3, 2))


def test_event_bins_from_the_formula():
    levels = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    steps = EventBins(15)(levels / 255)
    for v in range(256):
        assert int(steps.flatten()[v]) == (15 if v == 255 else v * 15 // 255)
    # through the front end and the batch encoder, as the pipeline runs it (uint8 maps)
    maps = np.random.default_rng(0).integers(0, 256, (5, 2, 6, 7)).astype(np.uint8)
    config = FrontEnd(kind="events", time_steps=10)
    encoded = encode(maps, config, batch_size=2)
    assert config.output_shape((2, 6, 7)) == (2, 6, 7)
    assert np.array_equal(encoded, np.where(maps == 255, 10, maps.astype(np.int64) * 10 // 255))
    assert FrontEnd().key() != FrontEnd(kind="events").key()


class GeneratedEvents:
    """A tonic-style dataset: items (events of tonic's dtype, label), a sensor_size. Class 0: a
    bar sweeping left to right, class 1: top to bottom, class 2: a diagonal bar along the other
    diagonal (ON events at the bar's leading edge, OFF at its trailing edge)."""

    def __init__(self, count, seed):
        import tonic
        self.sensor_size = tonic.datasets.NMNIST.sensor_size
        self.dtype = tonic.datasets.NMNIST.dtype
        rng = np.random.default_rng(seed)
        self.items = [(self.recording(i % 3, rng), i % 3) for i in range(count)]

    def recording(self, label, rng):
        import tonic
        width, height, _ = self.sensor_size
        x, y, t, p = [], [], [], []
        offset = rng.integers(0, 6)
        for step in range(20):
            for k in range(6, 28):
                for polarity, lag in ((1, 0), (0, 3)):
                    at = 4 + offset + step - lag
                    if at < 0:
                        continue
                    if label == 0:
                        x.append(at), y.append(k)
                    elif label == 1:
                        x.append(k), y.append(at)
                    else:
                        x.append(min(width - 1, k)), y.append(min(height - 1, max(0, at + 20 - k)))
                    p.append(polarity)
                    t.append(1000 * step + int(rng.integers(0, 500)))
        return tonic.io.make_structured_array(np.array(x), np.array(y), np.array(t), np.array(p), dtype=self.dtype)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@pytest.mark.cli
def test_a_conv_model_learns_generated_tonic_recordings(tmp_path, monkeypatch):
    pytest.importorskip("tonic", reason="tonic is the optional events extra (requirements-events.txt)")
    import tonic
    monkeypatch.setattr(tonic.datasets, "Generated", lambda save_to, train: GeneratedEvents(150 if train else 45, int(train)),
                        raising=False)
    dataset = data.load_dataset("tonic:Generated")
    assert dataset.train_images.shape == (150, 2, 34, 34) and dataset.model_settings["conv1.in_channels"] == 2
    metrics = train.main(["--dataset", "tonic:Generated", "--model", "mozafari2018", "--epochs", "1", "1", "10",
                          "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                          "--no-progress", "--threads", "2", "--probe-samples", "0", "--val-size", "0.2"])
    # chance is 1 / 3; 30 of the 45 test images (67 %) on the development machine
    assert metrics["accuracy"] > 0.5


def test_tonic_errors_are_one_line(monkeypatch):
    tonic = pytest.importorskip("tonic", reason="tonic is the optional events extra (requirements-events.txt)")

    def offline(save_to, train):
        raise OSError("Network is unreachable")
    monkeypatch.setattr(tonic.datasets, "NMNIST", offline)
    with pytest.raises(UserError, match="tonic could not read or download it .*Network is unreachable"):
        data.load_dataset("nmnist", root="/tmp/nowhere")
    with pytest.raises(UserError, match="tonic has no dataset 'Nothing'"):
        data.load_dataset("tonic:Nothing")


def test_event_settings_need_a_conv_model():
    dataset = data.Dataset("tonic:X", np.zeros((2, 2, 8, 8), np.uint8), np.array([0, 1]),
                           np.zeros((2, 2, 8, 8), np.uint8), np.array([0, 1]), classes=["a", "b"],
                           model_settings=dict(event_recordings.EVENT_SETTINGS))
    with pytest.raises(UserError, match="tavanaei2017: tonic:X needs a model that takes frontend.kind=events"):
        pipeline.build_model("tavanaei2017", 2, dict(dataset.model_settings), None, dataset)
    model = pipeline.build_model("mozafari2018", 2, dict(dataset.model_settings), None, dataset)
    assert model.blocks[0].conv.weight.shape[1] == 2 and model.frontend.kind == "events"


def test_bad_recordings_no_download_and_augmentation_are_one_line_errors(tmp_path, monkeypatch):
    class Bad:
        sensor_size = (4, 4, 2)

        def __len__(self):
            return 2

        def __getitem__(self, index):
            return events([(5, 0, 0, 1)]), 0          # outside the 4 x 4 sensor
    with pytest.raises(UserError, match="recording 0 is not .*outside the 4x4 sensor"):
        event_recordings.events_dataset("tonic:Bad", Bad(), Bad())
    tonic = pytest.importorskip("tonic", reason="tonic is the optional events extra (requirements-events.txt)")
    with pytest.raises(UserError, match="does not exist and --no-download is set"):
        data.load_dataset("nmnist", root=str(tmp_path), download=False)
    import pipeline
    from run_config import RunConfig, Runtime
    dataset = data.Dataset("tonic:X", np.zeros((4, 2, 8, 8), np.uint8), np.array([0, 1, 0, 1]),
                           np.zeros((2, 2, 8, 8), np.uint8), np.array([0, 1]), classes=["a", "b"],
                           model_settings=dict(event_recordings.EVENT_SETTINGS))
    config = RunConfig(val_size=0.5, augment=True)
    runtime = Runtime(cache_dir=str(tmp_path / "cache"), progress=False, device="cpu")
    with pytest.raises(UserError, match="--augment rotates and shifts grey-level images"):
        pipeline.prepare_splits(config, runtime, dataset, FrontEnd(kind="events"), print)
