.PHONY: demo test bench

# Set up and run the whole embedded pipeline on this machine (no servers, no internet).
demo:
	@scripts/demo.sh

# Set up and run the whole test suite.
test:
	@scripts/test.sh

# Publishing benchmark (2 GiB): hubferry push vs raw upload_folder vs the floor.
bench:
	@scripts/setup.sh && .venv/bin/python bench/publish.py
