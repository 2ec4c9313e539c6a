from ghstream.cli import main

main()
