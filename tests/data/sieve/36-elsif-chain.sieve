require "fileinto";
if header :is "subject" "nope" { fileinto "A"; }
elsif header :contains "from" "alice" { fileinto "B"; }
else { fileinto "C"; }
