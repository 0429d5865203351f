"""Emulated LLM servers, one module per wire format, written from the providers' documentation and
checked against the official clients -- never importing the proxy's adapters, so they cannot simply
agree with them."""
