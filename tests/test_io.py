"""regionclip.io: atomic writes and the shared input-file check."""

from __future__ import annotations

import pytest

from regionclip.errors import CheckpointError, ConfigError
from regionclip.io import atomic_write_json, check_file


def test_check_file_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="model.weights is not set"):
        check_file(None, "model.weights")
    with pytest.raises(CheckpointError, match=r"text_weights: file not found: .*absent\.pt"):
        check_file(tmp_path / "absent.pt", "text_weights")
    with pytest.raises(CheckpointError, match="file not found"):  # a folder is not a file
        check_file(tmp_path, "text_weights")
    present = atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert check_file(str(present), "x") == present


def test_train_detector_and_the_inference_reader_share_the_check():
    import regionclip.detect.loading as loading
    import regionclip.tasks.train_detector as train_detector

    assert loading.check_file is check_file and train_detector.check_file is check_file
    assert not hasattr(train_detector, "_check_file")
