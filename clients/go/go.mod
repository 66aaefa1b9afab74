module besterd.dev/bester

go 1.19
