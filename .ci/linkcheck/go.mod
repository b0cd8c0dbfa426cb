module github.com/spreadlb/spread/ci/linkcheck

go 1.26
