require "fileinto";
if header :comparator "i;octet" :contains "subject" "HELLO" { fileinto "Wrong"; } else { fileinto "Right"; }
