"""Generic SMART on FHIR 2.x EHR: the base profile every vendor profile refines."""

from integrations.generic.profile import GenericProfile, scope_to_v1, scope_to_v2

__all__ = ["GenericProfile", "scope_to_v1", "scope_to_v2"]
