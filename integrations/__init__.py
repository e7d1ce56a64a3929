"""EHR vendor and feed integrations: one package per vendor; quirks live here and nowhere else."""
