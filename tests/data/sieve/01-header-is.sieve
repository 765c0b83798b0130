require "fileinto";
if header :is "subject" "Hello there" { fileinto "Greetings"; }
