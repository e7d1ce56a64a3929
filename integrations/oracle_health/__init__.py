"""Oracle Health (Cerner Millennium): tenant-specific authorization server URLs, v1 scopes."""

from integrations.oracle_health.profile import OracleHealthProfile, tenant_id

__all__ = ["OracleHealthProfile", "tenant_id"]
