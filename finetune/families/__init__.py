"""Families of tasks: each implements the stage verbs for its tasks, one module per stage (task.py: the interface every
stage calls)."""
