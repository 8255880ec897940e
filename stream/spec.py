"""The config schema helpers, re-exported: they live in `engines.spec` (a leaf module with no
dependencies), so `engines` never imports `stream` while `stream` modules keep importing them
from here."""

from engines.spec import ConfigError, bounded, parse_spec, required, section, spec_json_schema

__all__ = ["ConfigError", "bounded", "parse_spec", "required", "section", "spec_json_schema"]
