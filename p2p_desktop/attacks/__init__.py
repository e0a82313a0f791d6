"""Attacks: one file per attack, one interface (:mod:`p2p_desktop.attacks.base`).

Use :func:`p2p_desktop.attacks.registry.get` to obtain an attack class by name and
:func:`p2p_desktop.attacks.runner.run_attack` to run it on a study.
"""
