"""Active learning: ``remul-ff learn`` (:class:`~remul_ff.learn.loop.LearnRun`) from a spec (:mod:`remul_ff.learn.spec`)."""

from remul_ff.learn.loop import LearnRun
from remul_ff.learn.spec import LearnSpec, load_learn_spec

__all__ = ["LearnRun", "LearnSpec", "load_learn_spec"]
