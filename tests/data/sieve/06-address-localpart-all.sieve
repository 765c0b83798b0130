require "fileinto";
if address :all :is ["to", "cc"] "boss@example.org" { fileinto "Boss"; }
