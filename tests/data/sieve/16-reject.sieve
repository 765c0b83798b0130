require "reject";
if header :contains "subject" "hello" { reject "Go away"; }
