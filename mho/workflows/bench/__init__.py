"""`mho bench`: the simulator against its floors, runtimes against each other, LPA speed."""
