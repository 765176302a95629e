"""Reading a sheet file and checking every row before anything is sent."""
