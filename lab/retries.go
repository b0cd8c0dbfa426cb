package main

var retriesBatch = batch{name: "retries"}
