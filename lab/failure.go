package main

var failureBatch = batch{name: "failure"}
