"""Small mechanisms any module may use, each written once (standard library only): files,
/proc, socket directories, the Apptainer binary."""
