from bridge.cli import program

program()
