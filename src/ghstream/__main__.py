from ghstream.cli import main

# Guarded: ingest's parse workers are spawned processes, which import __main__ again.
if __name__ == "__main__":
    main()
