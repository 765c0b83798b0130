require "fileinto";
if header :contains "subject" "Grüße" { fileinto "Decoded"; }
