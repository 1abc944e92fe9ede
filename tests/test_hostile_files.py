"""Files that are not what they claim: one clear line each, and never code run (#14 item 15)."""

import pickle

import pytest

from defectkit.errors import DefectkitError


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_holding_objects_is_refused_in_one_line_without_unsafe_advice(tmp_path, capsys):
    from defectkit.sam2_model import read_checkpoint

    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(DefectkitError) as caught:
        read_checkpoint(checkpoint)
    message = str(caught.value)
    assert str(checkpoint) in message and "never loaded" in message
    assert "\n" not in message and "weights_only=False" not in message
    assert "this must never run" not in capsys.readouterr().out
