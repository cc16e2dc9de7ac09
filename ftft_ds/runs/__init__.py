"""The two kinds of run, reference and main: their set-up, the one step plan they and the sweep use,
and the dynamics store they write."""
