module sluice/loadgen

go 1.19
