"""Pure, sans-IO adapters: one module per API format, converting to and from the IR (`adapters.ir`).

Nothing in this package imports aiohttp or touches a socket; `proxy/` does all I/O.
"""
