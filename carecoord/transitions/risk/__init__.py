"""Readmission risk at discharge: LACE and HOSPITAL."""
