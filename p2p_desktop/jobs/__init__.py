"""The job layer: the one Qt-free way to run an attack, write and export its outputs, audit
them, re-run a recorded run and evaluate a dataset. ``p2p-desktop`` (cli/) and the desktop app
(gui/) both call it.

- :mod:`~p2p_desktop.jobs.attack`: run an attack; write a run's outputs and audit record (all or nothing);
- :mod:`~p2p_desktop.jobs.export`: export one format of a finished run, audited;
- :mod:`~p2p_desktop.jobs.formats`: THE export-format table (CLI flags, GUI actions, writers);
- :mod:`~p2p_desktop.jobs.audit`: the one builder of run and export audit records;
- :mod:`~p2p_desktop.jobs.rerun`: reproduce a run from its provenance record;
- :mod:`~p2p_desktop.jobs.pseudonyms`: the optional map from de-identified outputs to their source;
- :mod:`~p2p_desktop.jobs.evaluate`: the batch evaluation (attacks × classifiers over a dataset).
"""
