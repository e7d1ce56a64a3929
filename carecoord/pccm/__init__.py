"""Medicaid PCCM: primary-care-provider assignment."""
