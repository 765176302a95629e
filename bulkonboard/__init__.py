"""bulkonboard: onboard new hires into CSP customers' tenants in bulk, through Partner Center."""

__version__ = "0.1.0"
