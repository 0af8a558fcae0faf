"""finetune/training/fit.py's resume path on its own: what a run killed mid-write leaves in its dvclive folder."""
from dvclive import Live

from finetune.training.fit import _trim_live_history


def test_a_torn_summary_and_rows_after_the_checkpoint_are_dropped_before_dvclive_resumes(tmp_path):
    """A kill while dvclive rewrote metrics.json left it empty: Live(resume=True) then raised JSONDecodeError in every
    rank (seen once in the DDP resume test on an AMD EPYC). Rows logged after the last checkpoint, and a torn last row,
    go too."""
    live = tmp_path / "live"
    (live / "plots/metrics/train").mkdir(parents=True)
    (live / "plots/metrics/train/loss.tsv").write_text("timestamp\tstep\tloss\n1\t10\t0.9\n2\t20\t0.8\n3\t30\t0.7\n4\t4")
    (live / "metrics.json").write_text("")
    _trim_live_history(live, last_step=20)
    assert (live / "plots/metrics/train/loss.tsv").read_text() == "timestamp\tstep\tloss\n1\t10\t0.9\n2\t20\t0.8\n"
    assert not (live / "metrics.json").exists()
    Live(str(live), resume=True, dvcyaml=None, save_dvc_exp=False, report=None).end()  # reads back without an error


def test_a_whole_summary_is_kept(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    (live / "metrics.json").write_text('{"step": 20}')
    _trim_live_history(live, last_step=20)
    assert (live / "metrics.json").read_text() == '{"step": 20}'
