"""Channel tests: each channel's own behaviour, and the contract every registered channel keeps."""
