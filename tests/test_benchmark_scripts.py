"""The small benchmark scripts run and print what they promise (their figures are not tested)."""

from benchmarks import lstm_matmul_floor


def test_lstm_matmul_floor_prints_each_group_and_the_budget(capsys):
    lstm_matmul_floor.main(["--seconds", "0.05", "--target-steps-per-s", "25"])
    out = capsys.readouterr().out
    for name in lstm_matmul_floor.groups():
        assert name in out
    assert "sum (a floor under the step time)" in out
    assert "25.0 steps/s allows 40.0 ms per step" in out
