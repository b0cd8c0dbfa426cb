package main

var herdBatch = batch{name: "herd"}

// maxHerd bounds LAB_HERD_DISPATCHERS.
const maxHerd = 16
