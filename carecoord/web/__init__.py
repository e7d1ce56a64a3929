"""Screens for nurse case managers, PCPs and program managers."""
