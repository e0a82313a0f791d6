"""The job layer: one Qt-free way to run, write, export, audit, rerun and evaluate."""
