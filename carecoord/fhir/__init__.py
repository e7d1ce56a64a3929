"""The FHIR edge: versioned store with search index, REST router, bundles, OperationOutcome."""
